"""Test inputs built at test time: model files the suite cannot download (there is no model hub
here), with the independent references the tests check the engine against."""
