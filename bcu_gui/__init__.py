"""BCU Studio: backdoor cleansing with unlabelled data."""

__version__ = "0.1.0"
