"""The training core: models, data, methods and artifacts in plain PyTorch.

Nothing in this package may import FastAPI, Celery or SQLAlchemy: it runs as the trainer child
process and is tested on its own.
"""
