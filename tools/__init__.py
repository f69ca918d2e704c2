"""Test and demo tooling (the Stalwart metrics emulator): not part of the runtime wheel."""
