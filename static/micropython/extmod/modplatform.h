/* modsys.c includes this header; the sdist has no extmod/, and the port sets
 * MICROPY_PY_SYS_PLATFORM itself, so nothing is needed here. */
