"""Wire formats: decoders and encoders between HTTP bodies and canonical types. Pure, no I/O."""
