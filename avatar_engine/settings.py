"""Every environment variable the worker reads, in one typed object (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Read once per process; tests build their own with overrides."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # --- models -------------------------------------------------------------------------
    model_root: Path = Field(Path("/models"), description="root of mounted checkpoints (MODEL_ROOT)")
    wav2lip_ckpt: Path | None = Field(None, description="explicit Wav2Lip checkpoint (WAV2LIP_CKPT)")
    sadtalker_ckpt_dir: Path | None = Field(None, description="SadTalker checkpoint folder (SADTALKER_CKPT_DIR)")
    gfpgan_ckpt: Path | None = Field(None, description="explicit GFPGAN checkpoint (GFPGAN_CKPT)")
    fomm_ckpt: Path | None = Field(
        None, description="explicit FOMM vox-256 checkpoint, vox-cpk.pth.tar or vox-adv-cpk.pth.tar (FOMM_CKPT)")
    diff2lip_ckpt: Path | None = Field(
        None, description="explicit Diff2Lip checkpoint, a flat state_dict .pt; CC BY-NC 4.0 (DIFF2LIP_CKPT)")
    avatar_image: str | None = Field(
        None, description="which image this is, sadtalker or hq (AVATAR_IMAGE; set by the Dockerfiles): the model "
                          "doctor checks its promised engines")
    musetalk_dir: Path | None = Field(
        None, description="MuseTalk's models/ tree (musetalkV15/, sd-vae/, whisper/) if not MODEL_ROOT/musetalk "
                          "(MUSETALK_DIR)")
    model_licenses: Literal["any", "commercial"] = Field(
        "any", description="`commercial`: never choose a model whose license forbids commercial use (MODEL_LICENSES)")
    diff2lip_compile: bool = Field(
        False, description="wrap the Diff2Lip UNet in torch.compile on CUDA (DIFF2LIP_COMPILE; never on CPU)")
    sadtalker_auto_min_gpu_gb: float = Field(
        6.0, description="`auto` picks SadTalker only on a GPU with this much memory; 0 = also on CPU")
    default_quality_mode: Literal["auto", "real_time", "high_quality"] = Field(
        "auto", description="quality_mode of requests that do not set one (DEFAULT_QUALITY_MODE)")
    hq_min_free_gpu_gb: float = Field(
        12.0, description="`auto` picks the high-quality chain (FOMM + Diff2Lip + GFPGAN) only with this much free "
                          "GPU memory")

    # --- input limits -------------------------------------------------------------------
    max_image_bytes: int = 20 * 1024 * 1024
    max_audio_bytes: int = 50 * 1024 * 1024
    max_video_bytes: int = Field(100 * 1024 * 1024, description="FOMM reference video byte cap (MAX_VIDEO_BYTES)")
    max_image_pixels: int = 40_000_000
    max_audio_seconds: float = 300.0
    min_audio_seconds: float = 0.2
    max_text_chars: int = Field(4000, ge=1, description="longest `text` input, in characters (MAX_TEXT_CHARS)")
    fetch_connect_timeout_s: float = 5.0
    fetch_read_timeout_s: float = 15.0
    fetch_total_timeout_s: float = 60.0
    fetch_max_redirects: int = 3
    allow_private_urls: bool = Field(False, description="let URLs reach loopback/private ranges (tests only)")

    # --- encoding -----------------------------------------------------------------------
    video_encoder: str = Field("auto", description="auto | h264_nvenc | libx264 (VIDEO_ENCODER)")

    # --- delivery -----------------------------------------------------------------------
    output_dir: Path = Field(Path("/tmp/avatar-outputs"), description="where delivery=path writes MP4s")
    max_base64_bytes: int = Field(15 * 1024 * 1024, description="largest MP4 returned inline as base64")
    media_bucket: str | None = None
    media_prefix: str = "avatar-outputs/"
    gcs_signed_url_ttl: int = 86400
    gcs_public: bool = False
    gcs_credentials_json: SecretStr | None = Field(None, description="service-account JSON, plain or base64")
    google_application_credentials: Path | None = None
    gcs_signing_service_account: str | None = None
    bucket_endpoint_url: str | None = None
    bucket_access_key_id: str | None = None
    bucket_secret_access_key: SecretStr | None = None
    bucket_name: str | None = None
    bucket_region: str | None = None
    media_public_base_url: str | None = Field(None, description="public URL base for S3/R2 objects")
    avatars_prefix: str = Field("avatars/", description="bucket prefix of named avatars: <prefix><avatar_id>.png|jpg|webp")
    avatars_dir: Path | None = Field(None, description="baked folder of named avatars, checked before the bucket")
    storage_max_attempts: int = Field(5, ge=1, le=20)
    storage_retry_deadline_s: float = Field(600.0, gt=0)
    storage_backoff_initial_s: float = Field(1.0, ge=0, description="first retry backoff (doubles per attempt, plus jitter)")
    storage_backoff_max_s: float = Field(20.0, ge=0, description="longest single retry backoff")
    storage_connect_timeout_s: float = Field(10.0, gt=0, description="bucket request connect timeout")
    storage_read_timeout_s: float = Field(120.0, gt=0, description="bucket request read timeout")

    # --- worker -------------------------------------------------------------------------
    job_timeout_s: float = Field(900.0, description="a render running longer is abandoned (seconds, > 0)")
    job_concurrency: int = Field(1, ge=1, description="jobs one worker takes at once at most (capped by cores / GPU memory)")
    stream_output: bool = Field(False, description="register the streaming (generator) handler: live HLS / fMP4")
    mcp_file_roots: str | None = Field(
        None, description="folders the MCP server may read local image/audio paths from, separated by ':' "
                          "(MCP_FILE_ROOTS); unset: its working directory (never '/'); empty: no local files")
    work_dir: Path | None = Field(None, description="parent of per-job temp dirs (default: system temp)")
    torch_threads: int = Field(0, description="0 = all cores")
    cpu_bf16: bool = Field(True, description="bfloat16 inference on CPUs with native bf16 (AMX/AVX512-BF16)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None = Field(
        None, description="log level (LOG_LEVEL); unset: INFO for the worker, WARNING for the MCP server")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_name(cls, value):
        return value.upper() if isinstance(value, str) else value

    # --- live sessions (`python -m avatar_engine live`, docs/LIVE.md) -------------------------
    port: int = Field(8000, ge=1, le=65535,
                      description="live server port, set by Runpod load-balancing endpoints (PORT)")
    port_health: int | None = Field(
        None, ge=1, le=65535, description="a second port that answers only GET /ping, when the platform sets it")
    live_token: SecretStr | None = Field(None, description="bearer token every live session must present (LIVE_TOKEN)")
    live_max_sessions: int = Field(
        0, ge=0, description="concurrent live sessions; 0 = by cores (2 per core, at least 1)")
    live_max_session_s: float = Field(1800.0, gt=0, description="a live session is closed after this many seconds")
    live_max_message_bytes: int = Field(
        1024 * 1024, ge=1024, description="largest WebSocket message after `start` (audio chunk, text)")
    live_jitter_ms: float = Field(
        40.0, ge=0, le=1000, description="speech queued beyond one frame before a run of speech starts")
    live_send_buffer_s: float = Field(
        1.0, gt=0, description="stream seconds waiting to be sent before frames are held (dropped)")
    live_slow_close_s: float = Field(
        5.0, gt=0, description="a client still this far behind is closed (`slow_client`)")

    @field_validator("job_timeout_s")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if not value > 0:  # also NaN
            raise ValueError(f"JOB_TIMEOUT_S must be a positive number of seconds (got {value:g}); every job "
                             "would time out at once")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
