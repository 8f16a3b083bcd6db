package ban_test

import (
	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/smtpguard"
)

// The guard can ask the Manager directly.
var _ smtpguard.Blocklist = (*ban.Manager)(nil)
