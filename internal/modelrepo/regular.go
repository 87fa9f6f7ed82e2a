package modelrepo

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Size caps of the files ReadRegular reads from a repository.
const (
	MaxModelBytes = 2 << 30  // model.onnx: protobuf's own 2 GiB limit
	MaxSmallBytes = 16 << 20 // model.json, config.yaml
)

// ErrNotRegular is returned by ReadRegular for a FIFO, device, socket or
// directory.
var ErrNotRegular = errors.New("not a regular file")

// ReadRegular reads a repository file that must be a regular file (a
// symlink to one is followed) of at most max bytes. It opens without
// blocking, so a FIFO is refused at once instead of stalling the reloader,
// and a link to /dev/zero is refused instead of being read without end.
func ReadRegular(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, st.Mode().Type())
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s: %d bytes, more than the limit of %d", path, st.Size(), max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: more than the limit of %d bytes", path, max)
	}
	return b, nil
}

// CheckRegular is ReadRegular without the read: for files another library
// opens by path (ONNX Runtime reads model.onnx itself).
func CheckRegular(path string, max int64) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, st.Mode().Type())
	}
	if st.Size() > max {
		return fmt.Errorf("%s: %d bytes, more than the limit of %d", path, st.Size(), max)
	}
	if st.Size() == 0 {
		return fmt.Errorf("%s is empty", path)
	}
	return nil
}
