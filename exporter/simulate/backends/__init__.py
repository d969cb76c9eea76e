"""One module per simulated backend; each registers its simulators with `@register`."""
