import NIOCore
import NspawnAPI

// The exec relay's channel handlers: each passes its channel's events to the ExecRelay.

/// The socket after the switch: frames in, frames out.
final class SocketHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let relay: ExecRelay
    init(relay: ExecRelay) { self.relay = relay }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        relay.received(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        relay.socketReadCompleted()
    }

    func read(context: ChannelHandlerContext) {
        relay.socketRead(context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        relay.socketWritabilityChanged(context.channel.isWritable)
    }

    func channelInactive(context: ChannelHandlerContext) {
        relay.socketClosed()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// One of the command's outputs.
final class OutputHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let relay: ExecRelay
    let type: ExecFrameType
    init(relay: ExecRelay, type: ExecFrameType) {
        self.relay = relay
        self.type = type
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        relay.forward(unwrapInboundIn(data), as: type)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        relay.outputReadCompleted(context.channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
        relay.outputClosed(context.channel)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A terminal whose last user has gone reads EIO: its end of file.
        context.close(promise: nil)
    }
}

/// The command's stdin.
final class InputHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let relay: ExecRelay
    init(relay: ExecRelay) { self.relay = relay }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        relay.stdinWritabilityChanged(context.channel.isWritable)
    }

    func channelInactive(context: ChannelHandlerContext) {
        relay.stdinClosed(context.channel)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // EPIPE: the command closed its stdin.
        context.close(promise: nil)
    }
}
