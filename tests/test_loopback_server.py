"""The loopback server fixture itself: real sockets, real bytes, each fault as advertised."""

from __future__ import annotations

import http.client
import io
import socket
import urllib.error
import urllib.request

import pytest
from PIL import Image


def _get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None):
    return urllib.request.urlopen(
        urllib.request.Request(url, headers=headers or {}), timeout=timeout
    )


def test_serves_generated_images(http_server, image_factory):
    images = image_factory(3, seed=1)
    with _get(http_server.url(images[0].relpath)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/jpeg"
        body = resp.read()
    assert body == images[0].path.read_bytes()
    assert Image.open(io.BytesIO(body)).size == (64, 64)
    assert http_server.base_url.startswith("http://127.0.0.1:")


def test_png_images_and_captions(image_factory):
    images = image_factory(4, seed=2, fmt="png", subdir="png")
    assert all(Image.open(im.path).format == "PNG" for im in images)
    assert all(im.caption and im.colour in im.caption for im in images if "{" not in im.caption)
    again = image_factory(4, seed=2, fmt="png", subdir="png2")
    assert [a.caption for a in again] == [b.caption for b in images]
    assert again[0].path.read_bytes() == images[0].path.read_bytes()


def test_missing_and_forced_404(http_server, image_factory):
    images = image_factory(1)
    http_server.fault(images[0].relpath, "404")
    for url in (http_server.url("nope.jpg"), http_server.url(images[0].relpath)):
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(url)
        assert err.value.code == 404


def test_delay_longer_than_client_timeout(http_server, image_factory):
    images = image_factory(1)
    http_server.fault(images[0].relpath, "delay", seconds=2.0)
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        _get(http_server.url(images[0].relpath), timeout=0.3).read()


def test_robots_header(http_server, image_factory):
    images = image_factory(1)
    http_server.fault(images[0].relpath, "noai")
    with _get(http_server.url(images[0].relpath)) as resp:
        assert "noai" in resp.headers["X-Robots-Tag"]
        assert resp.read() == images[0].path.read_bytes()


@pytest.mark.parametrize("kind", ["corrupt", "truncate"])
def test_broken_image_bytes(http_server, image_factory, kind):
    images = image_factory(1)
    http_server.fault(images[0].relpath, kind)
    with _get(http_server.url(images[0].relpath)) as resp:
        body = resp.read()
    assert body != images[0].path.read_bytes()
    with pytest.raises(OSError):
        Image.open(io.BytesIO(body)).load()


def test_range_and_cut_connection(http_server, http_root):
    (http_root / "blob.bin").write_bytes(bytes(range(256)) * 40)
    http_server.fault("blob.bin", "cut", keep_bytes=1000, times=1)
    with pytest.raises(http.client.IncompleteRead), _get(http_server.url("blob.bin")) as resp:
        resp.read()
    with _get(http_server.url("blob.bin"), headers={"Range": "bytes=1000-"}) as resp:
        assert resp.status == 206
        assert resp.read() == (bytes(range(256)) * 40)[1000:]
    assert http_server.range_requests == [("/blob.bin", "bytes=1000-")]
    assert http_server.hits("blob.bin") == 2


def test_many_concurrent_clients(http_server, image_factory):
    from concurrent.futures import ThreadPoolExecutor

    images = image_factory(2)
    with ThreadPoolExecutor(64) as pool:
        sizes = list(
            pool.map(lambda i: len(_get(http_server.url(images[i % 2].relpath)).read()), range(200))
        )
    assert set(sizes) == {images[0].path.stat().st_size, images[1].path.stat().st_size}
