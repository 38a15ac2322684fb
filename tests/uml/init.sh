#!/bin/sh
# PID 1 of the user-mode Linux guest started by tests/uml/run.py.
#
# The guest's root is the host's `/` over hostfs, mounted read-only: the guest sees the repo, the venv and the
# Debian tools exactly where the host has them, and can write only to its own tmpfs mounts and to the runner's
# exchange directory ($KP_UML_DIR on the host, mounted at /run/kp-uml). The runner puts the command to run in
# /run/kp-uml/command; this script writes its exit status to /run/kp-uml/rc and powers the guest off.
# KP_UML_START / KP_UML_END frame the command's output so the runner can hide the kernel's boot chatter.

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

poweroff_guest() {
    echo o > /proc/sysrq-trigger
    sleep 60
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/kp-uml /run/kp-modroot/lib/modules
if ! mount -t hostfs -o "$KP_UML_DIR" hostfs /run/kp-uml; then
    echo "kp-uml: cannot mount the exchange directory $KP_UML_DIR"
    poweroff_guest
fi
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t devpts devpts /dev/pts
# A command directory under a path the guest just covered with tmpfs (a checkout in /tmp, say) is mounted
# back, read-only like the rest of the host.
case "$KP_UML_CWD" in
    /tmp/*|/run/*|/dev/shm/*) mkdir -p "$KP_UML_CWD" && mount -r -t hostfs -o "$KP_UML_CWD" hostfs "$KP_UML_CWD" ;;
esac

# Debian ships the UML kernel's modules under /usr/lib/uml/modules, not /lib/modules: point modprobe there,
# for the explicit loads below and for the kernel's own on-demand loads (iptables matches, ipset types).
mount -t hostfs -o /usr/lib/uml/modules hostfs /run/kp-modroot/lib/modules
printf '#!/bin/sh\nexec modprobe -d /run/kp-modroot "$@"\n' > /run/kp-modprobe
chmod 0755 /run/kp-modprobe
echo /run/kp-modprobe > /proc/sys/kernel/modprobe
# IPVS's generic-netlink family is not loaded on demand, and schedulers are only loaded by name on first use.
for module in $(cat /run/kp-uml/modules); do
    /run/kp-modprobe "$module" || echo "kp-uml: module $module did not load"
done

# A writable /etc for the guest only (labs write /etc/netns/<netns>/resolv.conf): the host's /etc under a
# tmpfs overlay, so writes land in guest memory.
mkdir -p /run/kp-etc/upper /run/kp-etc/work
/run/kp-modprobe overlay
if ! mount -t overlay -o lowerdir=/etc,upperdir=/run/kp-etc/upper,workdir=/run/kp-etc/work overlay /etc; then
    echo "kp-uml: /etc stays read-only in the guest (no overlayfs)"
fi

ip link set lo up

echo KP_UML_START
sh /run/kp-uml/command
echo $? > /run/kp-uml/rc
echo KP_UML_END
poweroff_guest
