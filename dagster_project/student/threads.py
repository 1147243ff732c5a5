"""How many CPU threads torch should use: the CPUs actually free, not the CPUs the machine has.

Training a small model runs many tiny kernels whose threads work in lockstep: when another job takes
one of two cores, two threads wait on each other at every op and throughput collapses (measured on 2
cores: 1.8k tokens/s on 2 threads vs 10-14k on 1 at load ~9). So the count is the CPUs this process may
run on (its affinity) less the load other jobs put on them (the 1-minute load average, less this
process's own runnable thread), at least 1. `DISTILL_THREADS` (or `OMP_NUM_THREADS`) sets it outright.
On a GPU the count matters little and is chosen the same way.
"""

import os

THREADS_ENV = "DISTILL_THREADS"


def usable_cpus() -> int:
    """The CPUs this process may run on (affinity, cgroup-limited where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def free_cpus(load: float | None = None, cpus: int | None = None) -> int:
    """The usable CPUs less the load of other jobs (rounded), at least 1.

    `load` defaults to the 1-minute load average; this process's own runnable thread (it is loading
    data when this is asked) counts as 1 of it."""
    cpus = usable_cpus() if cpus is None else cpus
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            return cpus
    others = max(0.0, load - 1.0)
    return max(1, min(cpus, int(cpus - others + 0.5)))


def choose_threads() -> tuple[int, str]:
    """(thread count, why): the env setting when there is one, else the free CPUs."""
    for env in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(env, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), f"${env}"
    try:
        load = f"{os.getloadavg()[0]:.1f}"
    except OSError:
        load = "unknown"
    return free_cpus(), f"{usable_cpus()} usable CPUs at load {load}"


def set_threads(prefix: str) -> int:
    """Set torch's intra-op threads to `choose_threads()`; print it after `prefix`; return it."""
    import torch

    n, why = choose_threads()
    torch.set_num_threads(n)
    print(f"{prefix}: {n} CPU thread{'s' if n > 1 else ''} ({why})", flush=True)
    return n
