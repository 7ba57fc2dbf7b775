"""vzdump and vzrestore: portable backups of CTs, full and (on btrfs) incremental.

See docs/backup.md. archive.py names and prunes archives, metadata.py is what an archive says
about itself, excludes.py picks what to leave out, stream.py writes, reads and checks archive
files, subvol.py is the btrfs identity an incremental chain hangs on, dump.py is vzdump,
targets.py builds a restored private area for each layout and restore.py is vzrestore.
"""
