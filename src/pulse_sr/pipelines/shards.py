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
import os
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, TypeVar

from ..runtime import pick_device

PARTS = ".pulse-parts"
# Ranks wait for each other at the end of the run for as long as the slowest
# one works; a dead rank ends the whole job through torchrun, not through this.
WAIT = datetime.timedelta(days=30)

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
    dist.init_process_group(backend, timeout=WAIT, **kwargs)
    yield dataclasses.replace(ranks, joined=True), dev
    # Tear down together: a rank that destroys the group while a peer still holds its
    # connections can abort at exit ("terminate called without an active exception").
    # After an exception there is no barrier: the rank exits non-zero and torchrun ends the job.
    dist.barrier()
    dist.destroy_process_group()


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
        self.folder = Path(out_dir) / PARTS
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"rank{ranks.rank}.jsonl"
        self._f = open(self.path, "a")
        if self._f.tell() and not self.path.read_bytes().endswith(b"\n"):
            self._f.write("\n")  # end a torn line left by a killed run, so the next line parses

    def write(self, *records: dict) -> None:
        self._f.write("".join(json.dumps(r) + "\n" for r in records))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "PartLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_parts(out_dir: Path) -> List[dict]:
    """Every record in ``OUT/.pulse-parts/*.jsonl``, file by file in name order; torn lines are skipped."""
    folder = Path(out_dir) / PARTS
    records: List[dict] = []
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else ():
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records


def interrupted(records: Sequence[dict]) -> List[dict]:
    """The ``start`` records of units whose rank died before it recorded them ``done``.

    A unit is settled by a ``done`` or ``error`` record for it in any part file,
    which also covers a rerun that finished it on another rank.
    """
    settled = {r["unit"] for r in records if r.get("event") in ("done", "error") and "unit" in r}
    seen, out = set(), []
    for r in records:
        if r.get("event") == "start" and r.get("unit") not in settled and r.get("unit") not in seen:
            seen.add(r.get("unit"))
            out.append(r)
    return out


def clear_parts(out_dir: Path, keep: Optional[Sequence[dict]] = None) -> None:
    """Remove the part files once their records are merged; ``keep`` records are written back to one file."""
    folder = Path(out_dir) / PARTS
    if not folder.is_dir():
        return
    if keep:
        tmp = folder / ".carried.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        os.replace(tmp, folder / "carried.jsonl")
    for path in folder.glob("*.jsonl"):
        if keep and path.name == "carried.jsonl":
            continue
        path.unlink(missing_ok=True)
    if not keep:
        with contextlib.suppress(OSError):
            folder.rmdir()
