"""What the microvm runtime needs besides QEMU: the guest's kernel, initramfs and images, and its channels.

- `guest`: the kernel (Debian's cloud kernel, booted uncompressed), the
  initramfs (`init.c`, the modules it loads, the agent) and the read-only
  erofs image of each template's layers, built once and cached;
- `cpio`: the initramfs format;
- `channels`: QMP (QEMU's control socket) and the guest's control port;
- `accel`: KVM or TCG, chosen by booting a probe guest;
- `netdev`: the VM's tap, bridged to the sandbox's network namespace.
"""
