"""Model tokenizers that run without the model, for counting tokens of text an upstream engine
returns or is sent. Layer: beside backends and store; may import core only."""
