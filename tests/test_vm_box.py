"""The course box's disk and package (bpflab.tools.vm.box), on a tiny tree: what `make box` needs
from the host (sfdisk, mkfs.ext4, extlinux, syslinux's MBR, qemu-img, all from the playbook's dev
tools) is there, and the disk is one a BIOS boots. The whole box, built and booted by Vagrant, is
`make vm-vagrant`'s (too long for CI: its last run is in bench/vm-vagrant/)."""

from __future__ import annotations

import json
import struct
import subprocess
import tarfile
from pathlib import Path

from bpflab.tools.vm import box

MBR_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")


def test_the_box_disk_boots_into_extlinux_and_packs_as_a_libvirt_box(tmp_path, monkeypatch):
    monkeypatch.setattr(box, "DISK_GB", 1)
    tree = tmp_path / "tree"
    (tree / "boot/extlinux").mkdir(parents=True)
    (tree / "boot/extlinux/extlinux.conf").write_text(box.EXTLINUX)
    raw = tmp_path / "disk.raw"
    box.make_disk(tree, raw)

    sector = raw.read_bytes()[:512]
    assert sector[:440] == MBR_CODE.read_bytes()[:440]  # boot code: syslinux's MBR
    assert sector[510:] == b"\x55\xaa"
    flag, kind, first = sector[446], sector[446 + 4], struct.unpack_from("<I", sector, 446 + 8)[0]
    assert (flag, kind, first) == (0x80, 0x83, box.PART_OFFSET // 512)  # one bootable Linux partition
    listed = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                             f'mount -o ro,loop,offset={box.PART_OFFSET} "$0" "$1"; ls "$1/boot/extlinux"; '
                             'cat "$1/boot/extlinux/extlinux.conf"', raw, tmp_path / "tree"],
                            capture_output=True, text=True, check=True).stdout
    assert "ldlinux.sys" in listed  # extlinux's second stage, in the partition
    assert f"root=LABEL={box.LABEL}" in listed

    output = tmp_path / "course.box"
    monkeypatch.setattr(box, "CACHE", tmp_path)
    box.package_box(raw, output)
    with tarfile.open(output) as packed:
        assert sorted(packed.getnames()) == ["Vagrantfile", "box.img", "metadata.json"]
        metadata = json.load(packed.extractfile("metadata.json"))
        packed.extract("box.img", tmp_path / "unpacked")
    assert metadata == {"provider": "libvirt", "format": "qcow2", "virtual_size": 1}
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", tmp_path / "unpacked/box.img"],
                                     capture_output=True, text=True, check=True).stdout)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 1 << 30)
