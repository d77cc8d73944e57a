"""Check the Fashion-MNIST sha256s of mnistlab's catalog offline, from Debian's dataset-fashion-mnist.

Debian ships the official deflate streams under a new gzip header (no file name, its own mtime).
Putting back the original header makes each .gz byte-identical to the archive whose md5 the
Fashion-MNIST README publishes; the sha256 of the decompressed content is then the official one.

    apt-get download dataset-fashion-mnist && dpkg-deb -x dataset-fashion-mnist_*.deb deb
    python scripts/fashion_mnist_sha256.py deb/usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import sys
from pathlib import Path

from mnistlab.data import get_dataset_spec

# file -> (md5 published in the Fashion-MNIST README, mtime of the original gzip header)
ORIGINAL = {
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", 1504176606),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", 1504176606),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", 1504176627),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", 1504176627),
}


def main(folder: Path) -> int:
    catalog = {name: sha for name, sha in get_dataset_spec("fashion-mnist").files.values()}
    failed = 0
    for name, (md5, mtime) in ORIGINAL.items():
        data = (folder / name).read_bytes()
        # gzip header: magic, deflate, FNAME flag, mtime, XFL 0, OS 3 (Unix), the name; then Debian's stream.
        header = b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + b"\x00\x03" + name[:-3].encode() + b"\x00"
        rebuilt = header + data[10:]
        sha = hashlib.sha256(gzip.decompress(data)).hexdigest()
        md5_ok, sha_ok = hashlib.md5(rebuilt).hexdigest() == md5, sha == catalog[name]
        failed += not (md5_ok and sha_ok)
        print(f"{name}: rebuilt archive md5 {'=' if md5_ok else '!='} README's; "
              f"content sha256 {sha} {'=' if sha_ok else '!='} catalog's")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
