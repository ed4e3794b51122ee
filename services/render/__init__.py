"""What renders files and pictures from the topology: deploy/ (compose, Kubernetes, Prometheus)
and the SVG of the cluster. Nothing here starts or stops anything."""
