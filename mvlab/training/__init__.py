"""Training and measurement: the proxy trainer (``trainer``), its settings and result
(``config``, torch-free), the throughput benchmark (``bench``) and their parts (device and
precision handling, optimiser and schedule, resume state, evaluation, complexity, DDP).

Import the module you need (``from mvlab.training.trainer import train``): this package
imports nothing itself, so reading a config does not load torch."""
