package loader

import (
	"fmt"
	"net"
)

func interfaceByName(name string) (int, error) {
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return 0, fmt.Errorf("interface %q: %w", name, err)
	}
	return iface.Index, nil
}
