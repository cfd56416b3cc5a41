#!/bin/sh
# Installed as /usr/bin/@NAME@ by the BCU Studio .deb: runs the bundled program (no system Python needed).
exec /opt/bcu-studio/@NAME@ "$@"
