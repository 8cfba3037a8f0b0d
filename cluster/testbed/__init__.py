"""Tools to try hookcast locally: a receiver, synthetic audiences, the demo, the load test."""
