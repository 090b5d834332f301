"""Running a pipeline as one of several processes under ``torchrun``.

``torchrun`` starts the processes and sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``; :func:`session` joins the process
group they describe and picks this rank's device. The pipelines then:

* let rank 0 decide everything shared (what is already done, the seed) and
  broadcast it (:meth:`Ranks.broadcast`);
* split the pending work units over the ranks with :func:`split`, a pure
  function of the pending list, so every rank agrees without talking;
* append each finished unit to this rank's part file (:class:`PartLog`,
  ``OUT/.pulse-parts/rank<R>.jsonl``) as it goes, one fsync'd JSON line each;
* wait for each other (:meth:`Ranks.gather`) and let rank 0 merge the part
  files into the one report a single process writes.

A rank that dies leaves its part file: the finished units and a ``start``
line for the unit it was on. A rerun, at any world size, reads every part file
(:func:`read_parts`), redoes only the missing units and names the unit a rank
died on. Without ``torchrun`` (``WORLD_SIZE`` unset or 1) all of this reduces
to one process that writes and reads the same part files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, TypeVar

from ..errors import PeerMissingError, SettingsError
from ..runtime import pick_device

_log = logging.getLogger(__name__)

PARTS = ".pulse-parts"
# How long a rank waits for its peers to join the process group (and bounds each collective):
# PULSE_DIST_TIMEOUT seconds, 30 minutes by default. At the end of a run ranks wait for the slowest
# one through the part files instead (wait_for_peers), so long shares never hit this limit.
JOIN_TIMEOUT = datetime.timedelta(minutes=30)
FINISHED = "finished"  # the part-file event a rank writes when its share is done

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Ranks:
    """Where this process stands among the ranks of a run (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    joined: bool = False  # True when a torch.distributed process group is live

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world > 1

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.joined:
            return obj
        import torch.distributed as dist

        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank; also the point where all ranks meet."""
        if not self.joined:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def prefix(self) -> str:
        return f"[rank {self.rank}/{self.world}] " if self.sharded else ""

    def wait_for_peers(self, out_dir: Path, run: str, poll: float = 1.0) -> None:
        """Return once every rank has written its ``finished`` record for ``run`` to its part file.

        Waiting on the shared folder, not in a collective, has no time limit: a slow share is not an
        error (a dead rank ends the job through torchrun). Call after writing this rank's own record.
        """
        import time

        if not self.sharded:
            return
        while True:
            done = {r.get("rank") for r in read_parts(out_dir) if r.get("event") == FINISHED and r.get("run") == run}
            if len(done) >= self.world:
                return
            time.sleep(poll)


def ranks_from_env(env=None) -> Ranks:
    """The ranks ``torchrun`` describes in the environment (rank 0 of 1 without it)."""
    env = os.environ if env is None else env

    def get(name: str, default: int) -> int:
        try:
            return int(env.get(name, default))
        except ValueError:
            raise ValueError(f"{name}={env.get(name)!r} is not an integer (is this torchrun's environment?)") \
                from None

    world = get("WORLD_SIZE", 1)
    rank, local_rank = get("RANK", 0), get("LOCAL_RANK", 0)
    local_world = get("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < max(local_world, 1):
        raise ValueError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} "
                         f"LOCAL_RANK={local_rank} LOCAL_WORLD_SIZE={local_world}")
    return Ranks(rank, world, local_rank, max(local_world, 1))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def rank_device(device, ranks: Ranks):
    """This rank's device: ``cuda:LOCAL_RANK`` when there are GPUs, else the CPU with the
    cores split between the ranks of this machine so that they do not oversubscribe them
    (``PULSE_THREADS=N`` sets the threads per rank instead)."""
    import torch

    dev = pick_device(device)
    if dev.type == "cuda":
        if dev.index is None:
            count = torch.cuda.device_count()
            if ranks.local_rank >= count:
                raise ValueError(f"local rank {ranks.local_rank} has no GPU: this machine has {count}; "
                                 f"start at most {count} processes per node (--nproc-per-node)")
            dev = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(dev)
    elif dev.type == "cpu" and ranks.local_world > 1:
        threads = os.environ.get("PULSE_THREADS", "")
        torch.set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0
                              else max(1, usable_cores() // ranks.local_world))
    return dev


@contextlib.contextmanager
def session(device=None, env=None) -> Iterator[Tuple[Ranks, object]]:
    """Join the process group ``torchrun`` set up (if any) and yield ``(ranks, device)``.

    The backend is gloo on CPU and nccl on GPU. One process (no ``torchrun``)
    yields rank 0 of 1 and the device ``device`` names (or the best available).
    """
    ranks = ranks_from_env(env)
    if not ranks.sharded:
        yield ranks, pick_device(device)
        return
    import torch.distributed as dist

    dev = rank_device(device, ranks)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    kwargs = {"device_id": dev} if dev.type == "cuda" else {}
    timeout = join_timeout()
    try:
        dist.init_process_group(backend, timeout=timeout, **kwargs)
    except Exception as exc:  # DistNetworkError, DistStoreError, TimeoutError, RuntimeError ...
        others = [r for r in range(ranks.world) if r != ranks.rank]
        who = f"rank {others[0]}" if len(others) == 1 else f"some of ranks {others[0]}-{others[-1]}"
        raise PeerMissingError(
            f"rank {ranks.rank} of {ranks.world}: {who} never joined within {timeout.total_seconds():.0f} s "
            f"({type(exc).__name__}); start every rank (torchrun does), or raise PULSE_DIST_TIMEOUT") from None
    yield dataclasses.replace(ranks, joined=True), dev
    # Tear down together: a rank that destroys the group while a peer still holds its
    # connections can abort at exit ("terminate called without an active exception").
    # After an exception there is no barrier: the rank exits non-zero and torchrun ends the job.
    dist.barrier()
    dist.destroy_process_group()


def join_timeout() -> datetime.timedelta:
    """PULSE_DIST_TIMEOUT (seconds), else :data:`JOIN_TIMEOUT`."""
    text = os.environ.get("PULSE_DIST_TIMEOUT", "")
    try:
        seconds = float(text) if text else None
    except ValueError:
        raise SettingsError(f"PULSE_DIST_TIMEOUT={text[:40]!r} is not a number of seconds") from None
    if seconds is None:
        return JOIN_TIMEOUT
    if not (seconds > 0 and seconds < 1e9):
        raise SettingsError(f"PULSE_DIST_TIMEOUT={text[:40]!r} must be a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


def digest(obj) -> str:
    """A short, stable key for JSON-able settings: how runs and units are recognised on resume."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def split(items: Sequence[T], ranks: Ranks) -> List[T]:
    """This rank's share of ``items``: a contiguous block, the blocks differing in length by at most one."""
    n = len(items)
    return list(items[ranks.rank * n // ranks.world:(ranks.rank + 1) * n // ranks.world])


class PartLog:
    """This rank's part file: JSON lines appended and fsync'd one record at a time.

    Each rank of a run has its own file, so no two processes append to one file;
    a rank killed mid-write leaves at most one torn last line, which
    :func:`read_parts` skips.
    """

    def __init__(self, out_dir: Path, ranks: Ranks):
        from ..safe_paths import open_append, real_dir

        self.folder = real_dir(Path(out_dir) / PARTS, Path(out_dir))  # never through a planted link
        self.path = self.folder / f"rank{ranks.rank}.jsonl"
        self._f = open_append(self.path)
        if self._f.tell() and not self.path.read_bytes().endswith(b"\n"):
            self._f.write("\n")  # end a torn line left by a killed run, so the next line parses

    def write(self, *records: dict) -> None:
        self._f.write("".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "PartLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_parts(out_dir: Path, validate=None):
    """Every record in ``OUT/.pulse-parts/*.jsonl``, file by file in name order; torn lines are skipped.

    With ``validate(record) -> bool``, returns ``(records, {file: [lines that failed]})`` instead:
    a record with a missing or mistyped field never reaches the code that merges them.
    """
    from ..safe_paths import listed_files

    records: List[dict] = []
    bad: dict = {}
    for path in listed_files(Path(out_dir) / PARTS, "*.jsonl"):  # a planted link to another folder: nothing
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        lines = text.splitlines()
        for i, line in enumerate(lines):
            try:
                rec = json.loads(line, parse_constant=_no_constants)
            except ValueError:
                if i < len(lines) - 1 or text.endswith("\n"):  # not the torn last line of a killed run
                    bad.setdefault(path, []).append(line)
                continue
            if validate is not None and not validate(rec):
                bad.setdefault(path, []).append(line)
            elif isinstance(rec, dict):
                records.append(rec)
    return records if validate is None else (records, bad)


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def interrupted(records: Sequence[dict]) -> List[dict]:
    """The ``start`` records of units whose rank died before it recorded them ``done``.

    A unit is settled by a ``done`` or ``error`` record for it in any part file,
    which also covers a rerun that finished it on another rank.
    """
    settled = {r["unit"] for r in records if r.get("event") in ("done", "error") and isinstance(r.get("unit"), str)}
    seen, out = set(), []
    for r in records:
        if r.get("event") == "start" and r.get("unit") not in settled and r.get("unit") not in seen:
            seen.add(r.get("unit"))
            out.append(r)
    return out


def clear_parts(out_dir: Path, keep: Optional[Sequence[dict]] = None) -> None:
    """Remove the part files once their records are merged; ``keep`` records are written back to one file."""
    from ..safe_paths import create_new, listed_files, remove, remove_dir_if_empty

    folder = Path(out_dir) / PARTS
    if folder.is_symlink():
        remove(folder)  # a planted link: only the link goes, never a file of the folder it points to
        return
    if not folder.is_dir():
        return
    if keep:
        tmp = folder / f".carried.{os.getpid()}.tmp"
        with create_new(tmp, binary=False) as f:
            f.write("".join(json.dumps(r, allow_nan=False) + "\n" for r in keep))
        os.replace(tmp, folder / "carried.jsonl")
    for path in listed_files(folder, "*.jsonl"):
        if keep and path.name == "carried.jsonl":
            continue
        remove(path)
    if not keep:
        remove_dir_if_empty(folder)


def set_aside(path: Path, text: str) -> Path:
    """A copy of a state file that does not validate, next to it, for the user to look at."""
    import time

    from ..safe_paths import write_text

    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = Path(path).with_name(f"{Path(path).name}.bad-{stamp}")
    try:
        return write_text(aside, text)
    except OSError:
        return aside


def read_valid_parts(out_dir: Path, validate, seen: set) -> List[dict]:
    """The part records that ``validate``; the lines that do not are copied aside once per file (in ``seen``)."""
    records, bad = read_parts(out_dir, validate=validate)
    for path, lines in bad.items():
        if path in seen:
            continue
        seen.add(path)
        aside = set_aside(path, "".join(line + "\n" for line in lines))
        _log.warning("%s: %d record(s) this version cannot read; set aside in %s", path, len(lines), aside.name)
    return records
