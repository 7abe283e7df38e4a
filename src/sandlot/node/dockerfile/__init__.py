"""Templates built from Dockerfiles: `dockerfile` parses, `context` copies files, `builder` runs the steps."""
