"""tunery's control plane: the /v1 HTTP API, the database models and the job state machine."""
