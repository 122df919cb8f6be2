"""The runtime: configuration, the data plane (wire, transport, frame pools), the stages and the
supervisor that runs them. Installed as `edgert.runtime`; the public API is `edgert` itself."""
