"""`mtkit train`: turn prepared text and a SentencePiece model into checkpoints.

The package splits the job: `config` (options), `data` (files, vocabulary
checks), `corpus` (the encoded training corpus on disk, memory-mapped), `mix`
(several corpora, weighted), `batching` (token-budget batches, padding), `optim`
(loss, Adam, schedules), `threads` (the CPU thread tuner), `setup` (building a run,
resuming), `loop` (updates, validation, saving, stopping), `report` (metrics.jsonl
records, the bar, log lines), `validate` (evaluate: loss, BLEU, chrF) and `state`
(RUN/: config.json, metrics.jsonl, checkpoints, RNG states). Models are
`mtkit.models`'; the file format `mtkit.checkpoint`'s. What training shares with
translation stands below both and imports neither: the greedy search of validation
(mtkit.search), torchrun's plumbing (mtkit.distributed) and the readers of prepared
data (mtkit.manifest). Nothing here imports mtkit.translate.
"""

from __future__ import annotations

from mtkit.train.config import TrainConfig, check, parse_duration

__all__ = ["TrainConfig", "parse_duration", "train"]


def train(config: TrainConfig):
    """Run training as `config` says; returns a `loop.TrainResult`."""
    from mtkit import distributed
    from mtkit.runlock import claim_run_dir
    from mtkit.train.setup import build_trainer

    check(config)
    dist = distributed.setup(config.device)
    clean = False
    try:
        # One training per run directory: rank 0 holds RUN/.lock (mtkit.runlock).
        with claim_run_dir(config.out, dist):
            result = build_trainer(config, dist).run()
        clean = True
        return result
    finally:
        # Every rank leaves together after a clean run (see distributed.teardown).
        distributed.teardown(dist, clean=clean)
