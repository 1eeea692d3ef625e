"""The tunery Python SDK and `tunery` command."""
