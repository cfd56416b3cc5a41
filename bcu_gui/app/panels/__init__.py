"""The left column's panels: model, data, re-initialisation, training, run controls.

Each panel owns its widgets and emits signals when its inputs change; the main window composes them and
decides what a change means for the others.
"""
