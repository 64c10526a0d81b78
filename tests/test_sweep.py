"""bench/schedule_sweep.py's choice of settings and its one-setting-per-core runs."""

from __future__ import annotations

import os
import threading
import time

import pytest

from bench.schedule_sweep import Setting, parse_args, run_per_core, settings


def test_the_lists_make_a_product_of_settings():
    args = parse_args(["--lr", "2e-3,1e-3", "--warmup", "500", "--max-tokens", "1024,2048"])
    chosen = settings(args)
    assert len(chosen) == 4
    assert {(s.lr, s.tokens) for s in chosen} == {(2e-3, 1024), (2e-3, 2048), (1e-3, 1024),
                                                  (1e-3, 2048)}  # fmt: skip
    assert len({s.name for s in chosen}) == 4  # each its own run directory


def test_try_names_settings_over_the_lists_first_values():
    lists = ["--lr", "2e-3,1e-3", "--warmup", "500,100", "--warmup-share", "0.35"]
    args = parse_args([*lists, "--try", "tokens=1024", "--try", "lr=3e-3,share=0.15,dropout=0"])
    assert settings(args) == [
        Setting(lr=2e-3, warmup=500, share=0.35, tokens=1024, dropout=0.1),
        Setting(lr=3e-3, warmup=500, share=0.15, tokens=2048, dropout=0.0),
    ]
    with pytest.raises(SystemExit, match="unknown key"):
        settings(parse_args(["--try", "batch=1024"]))


def test_per_core_runs_one_setting_on_each_core_at_once():
    cores = sorted(os.sched_getaffinity(0))
    chosen = [Setting(lr=1e-3 * (i + 1), warmup=1, share=0.1, tokens=8, dropout=0.0)
              for i in range(len(cores) + 2)]  # fmt: skip
    lock, running, seen = threading.Lock(), {}, []

    def one(setting, pin):
        core = int(pin[-1])
        with lock:
            assert core not in running.values()  # no two settings share a core
            running[setting] = core
            seen.append((setting, core))
        time.sleep(0.05)
        with lock:
            del running[setting]

    run_per_core(chosen, one)
    assert sorted(s.lr for s, _ in seen) == [s.lr for s in chosen]  # each ran once
    assert {core for _, core in seen} <= set(cores)
