"""The Omnidesk desktop program and command line. The only package that imports Qt."""
