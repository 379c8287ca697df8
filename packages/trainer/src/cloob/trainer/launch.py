"""Who started this process and where its ranks meet: launcher variables → rank, world, rendezvous.

Pure functions of an environment mapping (no torch, nothing read from the machine), so every
launcher's case is a unit test. The ranks come from the launcher closest to the process:

1. torchrun: `WORLD_SIZE`, `RANK`, `LOCAL_RANK` (torchrun may itself run under srun or mpirun);
2. Open MPI's mpirun: `OMPI_COMM_WORLD_SIZE`, `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_LOCAL_RANK`;
3. a PMI launcher (MPICH/Intel MPI's mpiexec, `srun --mpi=pmi2`): `PMI_SIZE`, `PMI_RANK`,
   `MPI_LOCALRANKID`;
4. srun: `SLURM_STEP_NUM_TASKS` (else `SLURM_NTASKS`), `SLURM_PROCID`, `SLURM_LOCALID`, only in a
   task srun started (`SLURM_STEP_ID` set). A batch script or an salloc shell also carries
   `SLURM_NTASKS`, but there it counts the allocation's tasks, not processes that exist: it is one
   process, told so in a note.

OpenCLIP reads the same variables one by one (rank from `PMI_RANK`, else `SLURM_PROCID`, else
`OMPI_COMM_WORLD_RANK`); here all three numbers come from one launcher, and MPI's variables win
over Slurm's because mpirun inside an allocation leaves the allocation's `SLURM_*` in its ranks'
environment, where they describe the tasks of mpirun's daemons (one per node), not the ranks.

The rendezvous: `MASTER_ADDR` + `MASTER_PORT` when exported (torchrun sets them; OpenCLIP's Slurm
recipe exports them), else `--dist-url tcp://HOST:PORT` (or `file://`), else, for srun's tasks,
the first host of the step's node list and port 15000 + job id mod 20000. Several ranks and none
of these: one error naming what to export.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from cloob.common.cli import UsageError

DERIVED_PORT_BASE, DERIVED_PORT_SPAN = (
    15000,
    20000,
)  # the port srun's tasks meet on: base + id % span
LOOPBACK = re.compile(r"^(localhost|127(\.\d+){3}|::1|\[::1\])$")

# name, (world size, rank, local rank) variables, in the order of precedence above
LAUNCHERS: tuple[tuple[str, tuple[str, str, str]], ...] = (
    ("torchrun", ("WORLD_SIZE", "RANK", "LOCAL_RANK")),
    ("Open MPI", ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK")),
    ("PMI", ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID")),
    ("Slurm", ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")),
)
# every variable read here (tests clear them to start from a plain shell)
VARIABLES = (
    *(name for _, names in LAUNCHERS for name in names),
    "SLURM_STEP_NUM_TASKS",
    "SLURM_STEP_ID",
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_JOB_NODELIST",
    "SLURM_STEP_NUM_NODES",
    "SLURM_NNODES",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_USE_AGENT_STORE",
)


@dataclass(frozen=True)
class Launch:
    """This process's place in the job and how the ranks find each other."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    source: str = "single process"  # the launcher whose variables gave the ranks
    addr: str | None = None  # where rank 0 listens (TCP rendezvous)
    port: int | None = None
    via: str = ""  # where addr/port came from, for the log and error lines
    init_method: str | None = None  # a rendezvous URL torch handles itself (torchrun's, file://)
    note: str = ""  # worth one log line (the rendezvous chosen, variables that were ignored)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def endpoint(self) -> str:
        host = f"[{self.addr}]" if self.addr and ":" in self.addr else self.addr
        return f"{host}:{self.port}"


def from_env(env: Mapping[str, str], dist_url: str = "env://") -> Launch:
    """Rank, world size, local rank and rendezvous of this process, from its environment and
    `--dist-url`; a UsageError when several ranks are visible but cannot meet."""
    source, world, rank, local = _ranks(env)
    note = _batch_step_note(env) if source == "single process" else ""
    if world == 1:
        return Launch(source=source, note=note)
    base = Launch(rank, world, local, source)
    if env.get("MASTER_ADDR") and source == "torchrun" and _agent_store(env):
        # torchrun's agent already hosts the store at MASTER_ADDR:MASTER_PORT; torch joins it
        note = _shared_store_note(env)
        return replace(base, init_method="env://", via="torchrun's agent", note=note)
    if env.get("MASTER_ADDR"):
        found = _master(env, base, dist_url)
    elif dist_url not in ("", "env://"):
        found = _url(dist_url, base)
    elif _srun_task(env, world, rank):
        found = _from_slurm(env, base)
    else:
        raise UsageError(_nowhere(source, world))
    _check_not_loopback_across_nodes(env, found, world, rank)
    return found


def _ranks(env: Mapping[str, str]) -> tuple[str, int, int, int]:
    """(launcher, world size, rank, local rank) from the first launcher whose variables are set."""
    for source, (world_var, rank_var, local_var) in LAUNCHERS:
        if source == "Slurm":
            if "SLURM_STEP_ID" not in env:  # a batch script or salloc shell: no srun task
                continue
            world_var = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else world_var
        if world_var in env and rank_var in env:
            world = _number(env, world_var, minimum=1)
            rank = _number(env, rank_var, minimum=0)
            local = _number(env, local_var, minimum=0) if local_var in env else 0
            if rank >= world:
                raise UsageError(f"{rank_var}={rank} is not below {world_var}={world}")
            return source, world, rank, local
    return "single process", 1, 0, 0


def _number(env: Mapping[str, str], name: str, minimum: int) -> int:
    try:
        value = int(env[name])
    except ValueError:
        raise UsageError(f"{name}={env[name]!r} is not a whole number") from None
    if value < minimum:
        raise UsageError(f"{name}={value} must be at least {minimum}")
    return value


def _batch_step_note(env: Mapping[str, str]) -> str:
    tasks = env.get("SLURM_NTASKS", "1")
    if "SLURM_STEP_ID" in env or not tasks.isdigit() or int(tasks) <= 1:
        return ""
    return (
        f"SLURM_NTASKS={tasks}, but this process was not started by srun (no SLURM_STEP_ID): "
        f"training on this one process; start one task per rank with `srun` for {tasks} ranks"
    )


def _shared_store_note(env: Mapping[str, str]) -> str:
    """torchrun restarts workers (--max-restarts) into the store of the first attempt when its
    rendezvous store is shared with them: the restarted ranks read the dead ones' addresses and
    fail to connect (measured here with gloo; pytorch/pytorch#135712). A store of their own per
    attempt avoids it."""
    if int(env.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) < 1:
        return ""
    return (
        "warning: torchrun --max-restarts with its rendezvous store shared with the workers: "
        "restarted workers may fail to connect; export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
        "before torchrun (docs/clusters.md)"
    )


def _agent_store(env: Mapping[str, str]) -> bool:
    return env.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"


def _master(env: Mapping[str, str], base: Launch, dist_url: str) -> Launch:
    """MASTER_ADDR (+ MASTER_PORT, or srun's derived port); they win over --dist-url, which a
    reference command line carries as tcp://127.0.0.1:... (other nodes would dial themselves)."""
    addr = env["MASTER_ADDR"]
    if env.get("MASTER_PORT"):
        port = _port(env["MASTER_PORT"], "MASTER_PORT")
        via = "MASTER_ADDR/MASTER_PORT"
    elif _srun_task(env, base.world_size, base.rank) and env.get("SLURM_JOB_ID"):
        port = _job_port(env)
        via = "MASTER_ADDR, port from SLURM_JOB_ID"
    else:
        raise UsageError(
            f"MASTER_ADDR={addr} is set but MASTER_PORT is not: export MASTER_PORT (a free port "
            "on rank 0's host) for every rank"
        )
    ignored = dist_url not in ("", "env://")
    note = f"--dist-url {dist_url} ignored: MASTER_ADDR/MASTER_PORT are set" if ignored else ""
    return replace(base, addr=addr, port=port, via=via, note=note)


def _url(url: str, base: Launch) -> Launch:
    parts = urlsplit(url)
    if parts.scheme == "file":
        return replace(base, init_method=url, via="--dist-url")
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
        raise UsageError(f"--dist-url {url}: use tcp://HOST:PORT, file:///shared/path or env://")
    return replace(base, addr=parts.hostname, port=parts.port, via="--dist-url")


def _srun_task(env: Mapping[str, str], world: int, rank: int) -> bool:
    """Whether this process is one of the ranks of an srun step (srun started it directly, or
    through PMI with the same numbering)."""
    if "SLURM_STEP_ID" not in env or "SLURM_PROCID" not in env:
        return False
    tasks = env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", ""))
    return tasks == str(world) and env["SLURM_PROCID"] == str(rank)


def _from_slurm(env: Mapping[str, str], base: Launch) -> Launch:
    nodes_var = "SLURM_STEP_NODELIST" if env.get("SLURM_STEP_NODELIST") else "SLURM_JOB_NODELIST"
    if not env.get(nodes_var) or not env.get("SLURM_JOB_ID", "").isdigit():
        raise UsageError(_nowhere(base.source, base.world_size))
    hosts = expand_hostlist(env[nodes_var], nodes_var)
    port = _job_port(env)
    return replace(
        base,
        addr=hosts[0],
        port=port,
        via=f"the first host of {nodes_var}, port {DERIVED_PORT_BASE} + SLURM_JOB_ID % "
        f"{DERIVED_PORT_SPAN}; export MASTER_ADDR and MASTER_PORT to choose",
    )


def _job_port(env: Mapping[str, str]) -> int:
    return DERIVED_PORT_BASE + int(env["SLURM_JOB_ID"]) % DERIVED_PORT_SPAN


def _port(text: str, name: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"{name}={text!r} is not a port number (1-65535)")
    return int(text)


def _nowhere(source: str, world: int) -> str:
    return (
        f"{world} ranks ({source}'s variables) but no rendezvous: export MASTER_ADDR (rank 0's "
        "host) and MASTER_PORT (a free port there) for every rank, or pass --dist-url "
        "tcp://HOST:PORT"
    )


def _check_not_loopback_across_nodes(
    env: Mapping[str, str], launch: Launch, world: int, rank: int
) -> None:
    """A loopback rendezvous in an srun step over several nodes: ranks on the other nodes would
    dial their own machine and wait there until the timeout."""
    nodes = env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or "1"
    if (
        launch.addr
        and LOOPBACK.match(launch.addr)
        and _srun_task(env, world, rank)
        and nodes.isdigit()
        and int(nodes) > 1
    ):
        raise UsageError(
            f"the rendezvous {launch.endpoint} ({launch.via}) is a loopback address, but this "
            f"srun step spans {nodes} nodes: export MASTER_ADDR as rank 0's host name (or leave "
            "MASTER_ADDR and --dist-url out: srun's first host is used)"
        )


def expand_hostlist(text: str, name: str = "host list") -> list[str]:
    """Slurm's compact host list, in order: `node[01-03,07],gpu5` → node01 node02 node03 node07
    gpu5 (zero padding kept; several bracket groups in one name multiply out)."""
    hosts: list[str] = []
    for item in _top_level_items(text, name):
        hosts.extend(_expand_item(item, text, name))
    if not hosts:
        raise UsageError(f"{name}={text!r} names no host")
    return hosts


def _top_level_items(text: str, name: str) -> list[str]:
    """`text` split at the commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth not in (0, 1):
            raise UsageError(f"{name}={text!r} is not a Slurm host list")
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise UsageError(f"{name}={text!r} is not a Slurm host list")
    return [item for item in (*items, text[start:]) if item]


_GROUP = re.compile(r"^([^\[\]]*)\[([^\[\]]*)\](.*)$")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _expand_item(item: str, text: str, name: str) -> list[str]:
    match = _GROUP.match(item)
    if match is None:
        if "[" in item or "]" in item:
            raise UsageError(f"{name}={text!r} is not a Slurm host list")
        return [item]
    prefix, ranges, rest = match.groups()
    tails = _expand_item(rest, text, name) if rest else [""]
    out: list[str] = []
    for part in ranges.split(","):
        bounds = _RANGE.match(part)
        if bounds is None or (bounds[2] is not None and int(bounds[2]) < int(bounds[1])):
            raise UsageError(f"{name}={text!r}: {part!r} is not a number or a range a-b")
        first, last = bounds[1], bounds[2] or bounds[1]
        out.extend(
            f"{prefix}{n:0{len(first)}d}{tail}"
            for n in range(int(first), int(last) + 1)
            for tail in tails
        )
    return out
