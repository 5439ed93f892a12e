"""The one error calib/ raises for its inputs; a caller (pipeline/stages/int8.py) shows it to the user as its own."""


class CalibrationError(ValueError):
    """A graph calib cannot quantize, an exclusion that matches nothing, or a method, percentile or batch out of
    range: the message names the input and what to pass instead."""
