"""The HTTP layer: Flask app, routes (native, Facebox, state, console), inputs, auth, errors, OpenAPI."""
