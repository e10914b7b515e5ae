"""The benchmark suite: a mock upstream, a bare passthrough proxy, load generators and the
runner that measures the gateway against both (`python -m benchmarks.run`)."""
