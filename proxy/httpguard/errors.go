package httpguard

// Error is a refusal with a bounded reason, usable as a metric label.
type Error struct {
	Reason string
}

func (e *Error) Error() string { return "httpguard: " + e.Reason }

// The refusals. Each answers 400 unless noted at the caller.
var (
	ErrBadEncoding   = &Error{"bad_percent_encoding"}
	ErrEncodedSlash  = &Error{"encoded_slash"}
	ErrControlChar   = &Error{"control_character"}
	ErrInvalidUTF8   = &Error{"invalid_utf8"}
	ErrNotAbsolute   = &Error{"path_not_absolute"}
	ErrDotParams     = &Error{"dot_segment_params"}
	ErrEmptyParams   = &Error{"empty_segment_params"}
	ErrBadTarget     = &Error{"bad_request_target"}
	ErrBadMethod     = &Error{"bad_method"}
	ErrConnect       = &Error{"connect_method"}
	ErrBadVersion    = &Error{"bad_version"}
	ErrBareLF        = &Error{"bare_lf"}
	ErrBareCR        = &Error{"bare_cr"}
	ErrObsFold       = &Error{"obs_fold"}
	ErrHeaderName    = &Error{"bad_header_name"}
	ErrHeaderValue   = &Error{"bad_header_value"}
	ErrTooManyFields = &Error{"too_many_headers"}
	ErrHeadTooLarge  = &Error{"head_too_large"}
	ErrCLAndTE       = &Error{"content_length_and_transfer_encoding"}
	ErrDuplicateCL   = &Error{"duplicate_content_length"}
	ErrBadCL         = &Error{"bad_content_length"}
	ErrBadTE         = &Error{"bad_transfer_encoding"}
	ErrHost          = &Error{"bad_host"}
	ErrHostMismatch  = &Error{"host_authority_mismatch"}
	ErrBadChunk      = &Error{"bad_chunk"}
)
