"""What runs inside a container (docker-compose, Kubernetes): each role started through the
launcher's own code, configured from the environment."""
