"""The thread count follows the CPUs actually free, and an explicit setting wins."""

from dagster_project.student import threads


def test_free_cpus_subtracts_other_jobs_load():
    assert threads.free_cpus(load=1.0, cpus=2) == 2  # only this process runs
    assert threads.free_cpus(load=2.0, cpus=2) == 1  # one other job
    assert threads.free_cpus(load=9.0, cpus=2) == 1  # never below 1
    assert threads.free_cpus(load=0.0, cpus=16) == 16
    assert threads.free_cpus(load=5.2, cpus=16) == 12


def test_an_explicit_setting_wins(monkeypatch):
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.choose_threads() == (3, "$DISTILL_THREADS")
    monkeypatch.delenv(threads.THREADS_ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.choose_threads()[0] == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    n, why = threads.choose_threads()
    assert 1 <= n <= threads.usable_cpus() and "usable CPUs at load" in why
