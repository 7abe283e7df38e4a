"""Templates built from Dockerfiles: `parser` parses, `context` copies files in, `builder` runs the steps."""
