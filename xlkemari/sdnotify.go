package main

import (
	"fmt"
	"net"
)

// sdNotify sends state (e.g. "READY=1") to the service manager when it
// runs us as a Type=notify service: a datagram to $NOTIFY_SOCKET, an
// abstract socket when the name starts with '@'. Without NOTIFY_SOCKET it
// does nothing, so `listen` runs the same outside systemd.
func sdNotify(getenv func(string) string, state string) error {
	path := getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
