"""The worker: Celery tasks that supervise training, and the pure-PyTorch training core."""
