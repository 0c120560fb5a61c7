import AVFoundation
import EdgeVitCore
import Foundation

/// The back camera as BGRA frames: an `AVCaptureSession` with an `AVCaptureVideoDataOutput` in
/// `kCVPixelFormatType_32BGRA`. Frames are delivered unrotated, with the clockwise rotation that makes them
/// upright from `AVCaptureDevice.RotationCoordinator` (the core rotates, as it does for Android's CameraX).
final class CameraFeed: NSObject, AVCaptureVideoDataOutputSampleBufferDelegate {
  typealias FrameHandler = (CVPixelBuffer, Int) -> Void

  let session = AVCaptureSession()
  private let output = AVCaptureVideoDataOutput()
  private let queue = DispatchQueue(label: "edgevit.camera.frames")
  private var coordinator: AVCaptureDevice.RotationCoordinator?
  private var handler: FrameHandler?

  /// Asks for camera access and configures the session (not yet running).
  /// - Throws: `PreprocessError` when access is denied or there is no back camera.
  func configure(handler: @escaping FrameHandler) async throws {
    self.handler = handler
    guard await AVCaptureDevice.requestAccess(for: .video) else {
      throw PreprocessError("camera access denied: allow it in Settings > EdgeVit")
    }
    guard let device = AVCaptureDevice.default(.builtInWideAngleCamera, for: .video, position: .back) else {
      throw PreprocessError("no back camera")
    }
    let input = try AVCaptureDeviceInput(device: device)
    session.beginConfiguration()
    session.sessionPreset = .hd1280x720
    if session.canAddInput(input) { session.addInput(input) }
    output.videoSettings = [kCVPixelBufferPixelFormatTypeKey as String: kCVPixelFormatType_32BGRA]
    output.alwaysDiscardsLateVideoFrames = true
    output.setSampleBufferDelegate(self, queue: queue)
    if session.canAddOutput(output) { session.addOutput(output) }
    session.commitConfiguration()
    coordinator = AVCaptureDevice.RotationCoordinator(device: device, previewLayer: nil)
  }

  func start() { queue.async { [session] in if !session.isRunning { session.startRunning() } } }

  func stop() { queue.async { [session] in if session.isRunning { session.stopRunning() } } }

  func captureOutput(
    _ output: AVCaptureOutput, didOutput sampleBuffer: CMSampleBuffer, from connection: AVCaptureConnection
  ) {
    guard let pixels = CMSampleBufferGetImageBuffer(sampleBuffer) else { return }
    let angle = coordinator?.videoRotationAngleForHorizonLevelCapture ?? 90
    handler?(pixels, Orientation.rotation(degrees: Double(angle)))
  }
}
