"""What every stage shares: one-line errors, files that appear whole, the command line, progress
bars, small file formats and the typed checking of YAML. No torch, nothing of the project above it."""
