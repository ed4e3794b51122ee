"""The compose engine: the same cluster as the launcher's, run by Docker's engine from
`deploy/docker-compose.yml` (images built here from Debian packages and PyPI)."""
