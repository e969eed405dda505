package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/core"
)

// statusOf maps a wire code to its HTTP status. Together with core.CodeOf it
// is the one place that decides what a client is told about an error.
func statusOf(c core.Code) int {
	switch c {
	case core.CodeBadRequest, core.CodeInvalidName:
		return http.StatusBadRequest
	case core.CodeInvalidOp, core.CodeClockSkew, core.CodeFieldRule, core.CodeInvalidTransition,
		core.CodeOpIDReused, core.CodeOpExpired:
		return http.StatusUnprocessableEntity
	case core.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case core.CodeNotFound:
		return http.StatusNotFound
	case core.CodeConflict:
		return http.StatusConflict
	case core.CodePreconditionFailed:
		return http.StatusPreconditionFailed
	case core.CodeUnsupportedMedia:
		return http.StatusUnsupportedMediaType
	case core.CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case core.CodeUnauthorized:
		return http.StatusUnauthorized
	case core.CodeForbidden, core.CodeAccessRevoked, core.CodeNotReadable:
		return http.StatusForbidden
	case core.CodeRateLimited:
		return http.StatusTooManyRequests
	case core.CodeRequestTimeout:
		return http.StatusRequestTimeout
	case core.CodeUnavailable, core.CodeShuttingDown, core.CodeStorageFormat:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

type errorBody struct {
	Error struct {
		Code    core.Code `json:"code"`
		Message string    `json:"message"`
		Details any       `json:"details,omitempty"`
	} `json:"error"`
}

// writeError answers err with its status and code; internal details are only
// logged.
func writeError(w http.ResponseWriter, log logrus.FieldLogger, r *http.Request, err error) {
	code := core.CodeOf(err)
	status := statusOf(code)
	if status >= 500 {
		log.WithError(err).WithFields(logrus.Fields{"method": r.Method, "path": r.URL.Path}).Error("request failed")
	}
	var body errorBody
	body.Error.Code = code
	body.Error.Message = core.PublicMessage(err)
	body.Error.Details = core.DetailsOf(err)
	if code.Retryable() {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
