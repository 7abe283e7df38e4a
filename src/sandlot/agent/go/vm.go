package main

// Inside a microVM (runtime "microvm"), two virtio-serial ports replace the
// Unix socket: `org.sandlot.agent` carries the node link (the same protocol,
// bridged by QEMU to the node's per-sandbox socket) and `org.sandlot.control`
// serves the VM runtime's own requests: freeze and thaw the sandbox's writable
// disk, so that a checkpoint clones a consistent filesystem.
//
// A port has no connect or accept: its host end is "connected" while QEMU's
// socket to the node is. While it is not, poll reports POLLHUP and a read
// returns EOF (0). So a "dial" opens the port and waits for the host end, and
// a connection lasts until a read returns EOF; closing the port then makes a
// write still pending in another goroutine fail, so no half frame of the old
// connection reaches the next one.

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	pollOut = 0x4
	pollHup = 0x10
	// _IOWR('X', 119, int) and _IOWR('X', 120, int) from linux/fs.h
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

var errHostAbsent = errors.New("the port's host end is not connected")

func isCharDevice(path string) bool {
	var st syscall.Stat_t
	return syscall.Stat(path, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFCHR
}

// hostConnected polls the port once: writable and no hang-up means QEMU's end is connected.
func hostConnected(fd int) bool {
	fds := []pollFd{{fd: int32(fd), events: pollOut}}
	n, err := poll(fds, 0)
	return err == nil && n == 1 && fds[0].revents&pollHup == 0 && fds[0].revents&pollOut != 0
}

// openPort opens a virtio-serial port once its host end is connected (errHostAbsent until then).
func openPort(path string) (*os.File, error) {
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if !hostConnected(fd) {
		syscall.Close(fd)
		return nil, errHostAbsent
	}
	return os.NewFile(uintptr(fd), path), nil
}

// serveVMControl answers the VM runtime's line requests ("freeze", "thaw") on the control port.
//
// The port stays open while its host end comes and goes: closing it makes the guest kernel
// discard what reached it, and after a memory restore the host connects anew and sends
// "thaw" while the port still holds the end that saw the old host leave (so the request was
// lost, about one restore in eight). A read of 0 (the host away) waits for the host instead.
func serveVMControl(path, diskFd string) {
	disk, err := strconv.Atoi(diskFd)
	if err != nil {
		disk = -1
	} else {
		syscall.CloseOnExec(disk) // the init passed it to us alone, not to the sandbox's processes
	}
	for {
		f, err := openPort(path)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		serveControlPort(int(f.Fd()), disk) // Fd(): blocking reads from here, on this goroutine's thread
		f.Close()
	}
}

// serveControlPort answers requests on an open control port until it fails.
func serveControlPort(fd, disk int) {
	var line []byte
	buf := make([]byte, 256)
	for {
		n, err := syscall.Read(fd, buf)
		switch {
		case err == syscall.EINTR || err == syscall.EAGAIN:
			fds := []pollFd{{fd: int32(fd), events: pollIn}}
			_, _ = poll(fds, 1000)
			continue
		case err != nil:
			return
		case n == 0: // the host end is away: keep the port (and what reaches it) until it is back
			line = line[:0]
			for !hostConnected(fd) {
				time.Sleep(20 * time.Millisecond)
			}
			continue
		}
		line = append(line, buf[:n]...)
		for {
			i := strings.IndexByte(string(line), '\n')
			if i < 0 {
				break
			}
			request := strings.TrimSpace(string(line[:i]))
			line = line[i+1:]
			// The reply names its request: one that waited for a host that left is read by the
			// next connection, which can tell it is not its own.
			reply := "ok " + request
			if err := vmControl(request, disk); err != nil {
				reply = "error " + request + ": " + err.Error()
			}
			if _, err := syscall.Write(fd, []byte(reply+"\n")); err != nil && err != syscall.EPIPE {
				return
			}
		}
	}
}

func vmControl(request string, disk int) error {
	var req uintptr
	switch request {
	case "freeze":
		req = fiFreeze
	case "thaw":
		req = fiThaw
	default:
		return fmt.Errorf("unknown request %q", request)
	}
	if disk < 0 {
		return errors.New("the init passed no disk to freeze")
	}
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(disk), req, 0)
	switch {
	case e == 0:
		return nil
	case req == fiFreeze && e == syscall.EBUSY: // frozen already
		return nil
	case req == fiThaw && e == syscall.EINVAL: // not frozen
		return nil
	}
	return fmt.Errorf("%s: %v", request, e)
}

// joinCgroup moves the whole agent (every thread) into the cgroup v2 directory `dir`.
func joinCgroup(dir string) error {
	return os.WriteFile(dir+"/cgroup.procs", []byte("0"), 0)
}
