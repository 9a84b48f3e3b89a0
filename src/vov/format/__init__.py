"""The file: the `.vov` container (`bitstream`) and the entropy coding of its vector (`entropy`)."""
