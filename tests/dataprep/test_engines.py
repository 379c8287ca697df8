"""engines.py without starting an engine: the one line a failure becomes, loopback detection."""

from __future__ import annotations

import pytest

from cloob.dataprep.engines import explain, is_loopback

# Two log lines as Spark prints them.
SPARK_GAVE_UP = (
    "26/12/03 08:00:01 WARN StandaloneAppClient$ClientEndpoint: Failed to connect to master\n"
    "26/12/03 08:01:01 ERROR StandaloneSchedulerBackend: Application has been killed. "
    "Reason: All masters are unresponsive! Giving up.\n"
)


class Py4JJavaError(Exception):  # what pyspark raises, by name
    pass


def test_spark_master_that_gave_up_is_named_from_the_log(monkeypatch):
    monkeypatch.setenv("DATAPREP_SPARK_MASTER", "spark://head:7077")
    err = Py4JJavaError(
        "An error occurred while calling None.org.apache.spark.api.java."
        "JavaSparkContext.\n: java.lang.IllegalStateException: ..."
    )
    line = explain("pyspark", err, None, SPARK_GAVE_UP)
    assert line.startswith("Spark failed: the Spark master spark://head:7077 did not answer")
    assert "All masters are unresponsive! Giving up." in line and "\n" not in line
    # Without the log's cause the exception's own words stay the line.
    assert "Py4JJavaError" in explain("pyspark", err, None, "")


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:6379", True),
        ("ray://127.0.0.1:10001", True),
        ("localhost:6379", True),
        ("head:6379", False),
        ("10.0.0.5:6379", False),
        ("ray://head:10001", False),
    ],
)
def test_loopback_addresses(address, loopback):
    assert is_loopback(address) is loopback
