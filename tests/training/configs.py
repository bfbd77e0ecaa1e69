"""Training configs shared by the training tests."""

import dataclasses

from initjax.training import TrainConfig

# Ioffe & Szegedy's Figure 1 network (3 x 100 sigmoid, small Gaussian weights) on digits.
CFG_A = TrainConfig(
    label="sigmoid", widths=(100, 100, 100), activation="sigmoid",
    kernel_init="normal:stddev=0.1", optimizer="momentum", learning_rate=0.1, momentum=0.9,
    batch_size=60, steps=400, record_every=100, probe_size=200, train_eval_size=500,
)
CFG_B = dataclasses.replace(CFG_A, label="sigmoid+BN", norm="batch", steps=100,
                            bn_convention="pytorch")
CFG_C = TrainConfig(
    label="prelu", widths=(16,), activation="prelu_learned", kernel_init="he_normal",
    optimizer="sgd", learning_rate=0.1, batch_size=32, steps=300, record_every=100,
    probe_size=64, train_eval_size=256,
)
