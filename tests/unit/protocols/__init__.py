"""Tests for the wire formats in modelport.protocols."""
