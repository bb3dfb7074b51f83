/// The project's one version: nspawnctl, nspawnctl-images and nspawnd print it, nspawnd serves
/// it at `GET /v1/version`, and a unit test holds units/openapi.yaml's `info.version` to it.
public enum NspawnctlVersion {
    public static let current = "0.6.0"
}
