"""What a monitoring stack needs to serve inferkube: scaling signals, prometheus-adapter rules, the dashboard."""
