"""`mtkit train`: turn prepared text and a SentencePiece model into checkpoints.

The package splits the job: `config` (options), `data` (files, vocabulary
checks, encoding), `optim` (loss, Adam, schedules), `setup` (building a run,
resuming), `loop` (updates, validation, saving, stopping), `validate`,
`distributed` (torchrun) and `state` (RNG, RUN/ JSON files). Models are
`mtkit.models`'; batches `mtkit.train.batching`'s; the file format `mtkit.checkpoint`'s.
"""

from __future__ import annotations

from mtkit.train.config import TrainConfig, check, parse_duration

__all__ = ["TrainConfig", "parse_duration", "train"]


def train(config: TrainConfig):
    """Run training as `config` says; returns a `loop.TrainResult`."""
    from mtkit.train import distributed
    from mtkit.train.setup import build_trainer

    check(config)
    dist = distributed.setup(config.device)
    try:
        trainer = build_trainer(config, dist)
        try:
            return trainer.run()
        finally:
            if trainer.metrics:
                trainer.metrics.close()
    finally:
        distributed.teardown(dist)
