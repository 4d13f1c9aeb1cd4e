package xen

import (
	"errors"
	"fmt"
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
)

func TestErrorMatchesContract(t *testing.T) {
	wrapped := fmt.Errorf("xen: libxl_domain_info(7): %w", ErrorDomainNotfound)
	if !errors.Is(wrapped, libxl.ErrNoDomain) {
		t.Error("ErrorDomainNotfound does not match libxl.ErrNoDomain")
	}
	if !errors.Is(fmt.Errorf("w: %w", ErrorNi), libxl.ErrUnsupported) {
		t.Error("ErrorNi does not match libxl.ErrUnsupported")
	}
	if errors.Is(ErrorFail, libxl.ErrNoDomain) || errors.Is(ErrorFail, libxl.ErrUnsupported) {
		t.Error("ErrorFail matches a contract sentinel")
	}
	var e Error
	if !errors.As(wrapped, &e) || e != ErrorDomainNotfound {
		t.Errorf("errors.As gave %v", e)
	}
	if got := ErrorDomainNotfound.Error(); got != "libxl error -21: domain not found" {
		t.Errorf("Error() = %q", got)
	}
	if got := Error(-99).Error(); got != "libxl error -99" {
		t.Errorf("unknown code: %q", got)
	}
	if libxlError(0) != nil || libxlError(3) != nil || libxlError(-3) != ErrorFail {
		t.Error("libxlError")
	}
}
