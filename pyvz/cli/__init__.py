"""Command-line front ends: parse, call the library, format. No logic lives here."""
