"""``canrun check``: manifests from files or stdin, judged by the engine, written in every CI format."""
